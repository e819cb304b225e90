"""The matrices the tests run through: every PEFT method, every data format, the tiny models.

A new method adds one row to METHODS, a new format one to FORMATS; every test parametrized by
them (tests/test_methods.py, tests/test_formats.py, the sweeps, compare) then runs for it.
"""

# The config group option of each method, and overrides that keep its tiny runs short.
METHODS = {
    "prompt-tuning": ["peft.num_virtual_tokens=4"],
    "p-tuning": ["peft.num_virtual_tokens=4", "peft.encoder_hidden_size=16"],
    "prefix-tuning": ["peft.num_virtual_tokens=4"],
    "lora": ["peft.r=4"],
    "ia3": [],
    "loha": ["peft.r=4"],
    # Its model's own loss adds an orthogonality penalty, which held-out losses leave out:
    # without it, the model's own loss is the held-out loss (test_methods compares them).
    "adalora": ["peft.init_r=4", "peft.target_r=2", "peft.orth_reg_weight=0"],
    "adaption-prompt": ["peft.adapter_len=4"],
    "trainable-tokens": [],
    "ln-tuning": [],
    "adamss": ["peft.num_subspaces=2"],
    "beft": [],
    "deft": ["peft.r=4"],
    "frod": [],
    "glora": ["peft.r=4"],
    "hira": ["peft.r=4"],
    "osf": [],
    "peanut": ["peft.r=4"],
    "psoft": ["peft.r=4"],  # peft's 32 > the tiny Llama's k/v_proj outputs (16)
    "pvera": ["peft.r=16"],
    "supertuning": [],
    "tinylora": ["peft.u=8"],
    "unilora": [],
    "waveft": ["peft.n_frequency=64"],  # peft's 2592 > a 32 x 32 layer's entries
    "lokr": ["peft.r=4"],
    "oft": ["peft.oft_block_size=8"],
    "boft": [],  # 4-wide blocks divide every tiny layer's input
    "hra": ["peft.r=4"],
    "vera": ["peft.r=16"],
    # The tiny layers' sizes are 16 to 128: no room for the defaults' sizes (MISFITS).
    "fourierft": ["peft.n_frequency=64"],
    "c3a": ["peft.block_size=16"],
    "randlora": ["peft.r=4"],
    "shira": ["peft.r=4"],
    "vblora": ["peft.vector_length=16", "peft.num_vectors=32"],
    "delora": ["peft.r=4"],
    "road": ["peft.group_size=16"],
    "gralora": ["peft.r=6"],  # a multiple of gralora_k=2, and of 3 (MISFITS)
    "miss": ["peft.r=8"],
}

# One method of each way of tuning (virtual tokens, a prompt encoder, prefixes of every layer,
# low-rank updates, rescaled activations): what a sweep over methods and every data format run
# through, where every method would repeat what test_methods shows for each.
CORE_METHODS = ["prompt-tuning", "p-tuning", "prefix-tuning", "lora", "ia3"]

# The fixtures of the tiny models every method runs on (tests/helpers/tiny_models.py), but
# for the methods that apply to one architecture only.
MODELS = ["tiny_bloom", "tiny_llama"]
ONLY_ON = {"adaption-prompt": ["tiny_llama"]}  # peft implements it for Llama's attention
METHOD_MODELS = [(option, model) for option in METHODS for model in ONLY_ON.get(option, MODELS)]
# Whole tiny runs (logged, saved, reloaded): every method on the Llama, a method of each kind on
# both; what a method does on each architecture, test_methods' generations show.
RUN_MODELS = [(o, m) for o, m in METHOD_MODELS if o in CORE_METHODS or m == "tiny_llama"]

# Methods that train or come off in their own way (a trainer callback, attentions swapped in,
# embedding rows, normalization layers): beside a method of each kind, what the tests of the
# whole path (a sweep's shared base model, the adapter bank, the demo) run through.
PATH_METHODS = [*CORE_METHODS, "adalora", "adaption-prompt", "trainable-tokens", "ln-tuning"]

# The dataset overrides of each format, and the model fixture whose tokenizer can render it
# (chat's rows: tests/helpers/datasets.py's CHATS, written by write_chats).
FORMATS = {
    "text": (["dataset=prompts-sample"], "tiny_llama"),
    "completion": (["dataset=prompts-task"], "tiny_llama"),
    "chat": (["dataset.format=chat", "dataset.name=chats"], "tiny_chat_llama"),
}
