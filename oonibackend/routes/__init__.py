"""HTTP routes by area; each module has `setup(app)` that adds its routes and contexts."""
