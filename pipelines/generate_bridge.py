"""Ray job entrypoint for the learning check's `generate` stage (the generated multi-hop world).

    ray job submit --working-dir . -- python pipelines/generate_bridge.py --config learning_check [key=value ...]
"""

from s3ray.cli import run_pipeline

if __name__ == "__main__":
    run_pipeline("generate-bridge")
