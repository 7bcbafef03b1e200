#!/bin/sh
# Slurm's TaskProlog (the head's slurm.conf), run before each task of a job,
# the batch script included; each "export" line goes into the task's
# environment. Inside a job, Open MPI's mpirun must take its hosts from the
# job's allocation: the cluster's default hostfiles list every node, so
# they are set aside (Open MPI 4's and PRRTE's, Open MPI 5's launcher).
echo "export OMPI_MCA_orte_default_hostfile=none"
echo "export PRTE_MCA_prte_default_hostfile=none"
