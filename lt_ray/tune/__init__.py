"""The Ray Tune side of lt-ray: the only package that imports Ray and Optuna."""
