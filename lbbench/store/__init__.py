"""The results directory and its file formats (framework-free):

    results/<suite>/<run_id>/run.yaml      the RunSpec the worker ran (lbbench/spec.py)
                            mllog.txt      the MLPerf log (rank 0)
                            metrics.jsonl  per-step / per-epoch / diagnostics rows (metrics.py)
                            summary.json   the typed RunSummary, written last and atomically (summary.py)
                            worker.log     the launcher's command line and the workers' output
                            ckpt/          checkpoints (lbbench/worker/checkpoints.py)

files.py has the atomic writes and the layout.
"""
