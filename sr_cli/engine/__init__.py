"""The one inference engine every srx command uses."""
