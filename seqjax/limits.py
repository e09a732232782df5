"""Upper bounds of sizes a config may ask for: beyond them a run would
overflow an int32 index or the host's memory, so they are refused up front."""

INT32_MAX = 2**31 - 1
MAX_VOCAB = 2**24
MAX_UNITS = 2**16
MAX_LENGTH = 2**16
MAX_BATCH = 2**20
MAX_STEPS_PER_CALL = 2**16
MAX_EXAMPLES = 2**26  # generated examples: a few GB of int ids at most
MAX_SEED = 2**63 - 1
