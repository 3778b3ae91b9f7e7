"""features: see buildml/ARCHITECTURE.md."""
