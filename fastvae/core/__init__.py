"""The engine: the model and its explicit passes, parameters, workspaces, codes, noise."""
