"""LanguageBind's released checkpoints in and out of RayBind (pure PyTorch, no Ray).

    from encoders.languagebind import import_languagebind, export_languagebind
    model = import_languagebind(["LanguageBind_Video_FT", "LanguageBind_Audio_FT"])   # one BindModel
    save_model(model, "runs/languagebind")          # an ordinary RayBind checkpoint (+ base.safetensors)
    export_languagebind(model, "video", "out/LanguageBind_Video_RayBind")

`keys` holds the one name table (Hugging Face CLIP names <-> open_clip names), `folder` reads and writes
folders (safetensors, or a pickled .bin under weights_only=True only), `convert` maps configs and tensors.
"""

from encoders.languagebind.convert import export_languagebind, import_languagebind
from encoders.languagebind.folder import LanguageBindError, read_folder, resolve_source

__all__ = ["LanguageBindError", "export_languagebind", "import_languagebind", "read_folder", "resolve_source"]
