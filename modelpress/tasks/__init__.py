"""Built-in tasks. ``modelpress tasks`` lists them; the registry maps their names to factories."""
