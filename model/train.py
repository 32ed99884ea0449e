"""Deprecated alias of ``python -m training`` so that existing configs, scripts and k8s manifests keep working."""

if __name__ == "__main__":
    import runpy

    runpy.run_module("training", run_name="__main__", alter_sys=True)
