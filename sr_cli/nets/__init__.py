"""Network definitions: ``nn.Module`` classes only, no file or network I/O."""
