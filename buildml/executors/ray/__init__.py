"""ray: see buildml/ARCHITECTURE.md."""
