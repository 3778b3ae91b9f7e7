"""load: see buildml/ARCHITECTURE.md."""
