"""The evaluate stage and its report; answer scoring lives in :mod:`s3ray.scoring`. Import the submodules directly."""
