"""The public API is explicit and stable."""

import modalrec


def test_public_api_is_pinned() -> None:
    assert sorted(modalrec.__all__) == sorted(
        [
            "MODELS",
            "ConfigError",
            "DataError",
            "Dataset",
            "Embeddings",
            "Estimator",
            "EvalConfig",
            "Model",
            "ModalrecError",
            "NotFittedError",
            "Recommender",
            "RunConfig",
            "SyntheticConfig",
            "Trainer",
            "__version__",
            "evaluate",
            "load",
            "load_config",
            "load_dataset",
            "make_synthetic",
            "save_dataset",
            "train",
            *(cls.__name__ for cls in modalrec.MODELS.values()),  # the estimator classes
        ]
    )
    for name in modalrec.__all__:
        assert hasattr(modalrec, name)
