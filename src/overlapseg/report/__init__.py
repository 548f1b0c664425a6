"""Report stage: paper-style metric tables (CSV/Markdown/LaTeX) and figures (PNG/PDF)."""
