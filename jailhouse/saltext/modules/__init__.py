"""Salt module modules; Salt's loader reads the files here (it skips this one)."""
