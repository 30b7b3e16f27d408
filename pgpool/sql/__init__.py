"""SQL text analysis for routing: classify() -> StatementFacts (the only place sqlglot is used)."""
