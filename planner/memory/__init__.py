"""One module per memory component, each a set of small pure functions returning bytes."""
