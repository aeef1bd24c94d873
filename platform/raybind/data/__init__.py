"""Data stage: manifests and media in, decoded and synthesized batches out (Ray Data).

Flow: `manifest` (read rows) -> `decode` (frames, spectrograms, tokens; CPU tasks) -> `synthesis` (depth and
thermal from frames; actor pool) -> `pipeline` (assembles the lazy stream the workers read) or `build`
(writes it to Parquet once). `batch_format` names the columns every stage shares; `tower_input` turns a
batch into a tower's input on the consuming device.
"""
