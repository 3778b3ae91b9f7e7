"""docker: see buildml/ARCHITECTURE.md."""
