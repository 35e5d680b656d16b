# env.sh: sourced by the scripts: the environment every ccq job and test runs in.
# Open MPI refuses to run as root without these two; CI and fresh machines run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Debian's python3 (with python3-torch etc.), not any other python3 first on PATH.
export CCQ_PYTHON=/usr/bin/python3
