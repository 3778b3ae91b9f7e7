class Train:
    batch = 32
    drop = 0.5


SEED = 11
