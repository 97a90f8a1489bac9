"""fitplan's analytic planner: memory of a fine-tuning step, in bytes, from a model's config.

Nothing here imports torch: the planner runs anywhere click and tabulate do.
"""

__version__ = "0.1.0"
