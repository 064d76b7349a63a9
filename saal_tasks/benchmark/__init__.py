"""The benchmark harness: sweep planning, resumable execution, aggregation and reports."""
from .metrics import aubc, penalty_matrix, summarize
from .plan import Cell, SweepError, cell_config, plan_cells
from .report import write_report
from .run import cell_status, run_cell, run_sweep

__all__ = ['aubc', 'penalty_matrix', 'summarize', 'Cell', 'SweepError', 'cell_config',
           'plan_cells', 'write_report', 'cell_status', 'run_cell', 'run_sweep']
