"""Results as code: plans (the rows of a table), their per-seed records with provenance, paired statistics, and
the tables and figures generated from them (`kdforge reproduce`, `kdforge results`)."""
from kdforge.plans.plan import Plan, PlanRow, load_plan
from kdforge.plans.runner import reproduce
from kdforge.plans.stats import Paired, Summary, paired, summarize
from kdforge.plans.tables import figure, markdown, sync_docs, table_for

__all__ = ["Plan", "PlanRow", "load_plan", "reproduce", "Paired", "Summary", "paired", "summarize", "figure",
           "markdown", "sync_docs", "table_for"]
