"""Starting workers and running cells.

commands.py    launchers as a table: (RunSpec, run dir) -> the argv that starts the workers
gloo_local.py  the default one-node launcher (Horovod's rendezvous server, no horovodrun)
slurm.py       srun inside an allocation, sbatch scripts and submission outside one
runner.py      `lbbench run`: every cell through its launcher, locks, resume, failures
"""
