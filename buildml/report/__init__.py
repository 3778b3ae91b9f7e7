"""report: see buildml/ARCHITECTURE.md."""
