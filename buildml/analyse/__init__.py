"""analyse: see buildml/ARCHITECTURE.md."""
