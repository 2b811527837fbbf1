"""`srx train`: one-step SR models from a pretrained diffusion model (OSEDiff, Hero-SR, DFOSD recipes)."""
