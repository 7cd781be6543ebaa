__version__ = "0.1.0"

# Two messages the libraries print on every run that no learner can act on, stopped here, each by its exact text, so every
# other warning stays visible. Installed before bitsandbytes or peft is imported by any course code (they import this
# package first); remove each when the library that causes it is fixed.
import logging as _logging, warnings as _warnings

_BNB_KERNEL = "Failed to load CPU gemm_4bit_forward from kernels-community"
# bitsandbytes 0.50, imported on a CPU with AVX512-BF16, tries to fetch a hub kernel for its packed 4-bit *inference* layout;
# the course turns that layout off (`training.keep_trainable_layout`: training after it gets wrong gradients), so the kernel
# is never used, and offline or untrusted the lookup fails with this message.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda r: not str(r.msg).startswith(_BNB_KERNEL))
# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` in every `PeftModel` it builds (transformers 5.2x warns
# each time); the course itself uses the new names.
_warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
