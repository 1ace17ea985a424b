"""Pure metric functions: classification, ranking, regression. Each docstring states its formula."""
