"""store: see buildml/ARCHITECTURE.md."""
