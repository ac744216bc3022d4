"""The model pipeline: convert scikit-learn models to ONNX, optimise and quantise, profile, gate deployments.

- :mod:`.convert`: pickled scikit-learn estimator → ONNX (skl2onnx);
- :mod:`.optimize`: onnxruntime graph optimisation and int8 quantisation, with a before/after report;
- :mod:`.profiling`: latency, throughput and peak memory per onnxruntime provider, one subprocess each;
- :mod:`.gate`: does a model version fit each target device's firmware profile (pure);
- :mod:`.service`: the registry side, new versions with their lineage and stored profiles.
"""
