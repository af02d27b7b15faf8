"""Export of the report-text encoder (torch, transformers): training side only."""
