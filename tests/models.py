"""Tiny Keras models obeying the run model contract, for tests: float 0..255 in, dict(age years, gender, race) out."""


def tiny_model(size: int = 32, min_age: float = 0.0, max_age: float = 116.0):
    """A seeded two-conv model whose age output spans ``min_age..max_age`` years."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(8, 3, activation="relu", padding="same", name="conv1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(8, 3, activation="relu", padding="same", name="conv2")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    age = layers.Dense(1, activation="sigmoid", name="age_unit")(features)
    age = layers.Rescaling(max_age - min_age, offset=min_age, name="age")(age)
    gender = layers.Dense(2, activation="softmax", name="gender")(features)
    race = layers.Dense(5, activation="softmax", name="race")(features)
    return keras.Model(inputs, {"age": age, "gender": gender, "race": race})


def tiny_training_data(counts: tuple[int, int, int], size: int, seed: int = 0, folder: str = ""):
    """Random images, a labelled frame and a train/valid/test split of ``counts`` rows, for a trainer smoke test."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = sum(counts)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    frame = pd.DataFrame(
        {
            "path": [f"{folder}{i}.jpg" for i in range(n)],
            "file": [f"{i}.jpg" for i in range(n)],
            "age": rng.integers(10, 66, n),
            "gender": np.arange(n) % 2,
            "race": np.arange(n) % 5,
        }
    )
    names = ["train"] * counts[0] + ["valid"] * counts[1] + ["test"] * counts[2]
    return images, frame, pd.Series(names, index=frame.index)
