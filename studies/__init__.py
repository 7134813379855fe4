"""Research studies: evidence that the product's methods work, measured in the toy world.

Each study is a module with a config dataclass and a ``run_…`` function; ``python -m studies <study>``
runs one, its options generated from the config's fields (``studies.cli``).

- ``reward_toy``: VideoReward trained on simulated judgments, against the oracle's ceiling (``reward-toy``);
- ``toy_policy``: the toy world's base flow policy, a tiny Wan pretrained on toy clips (``toy-policy``);
- ``flow_toy``: SFT, Flow-RWR and Flow-DPO on the toy base policy, oracle win rates (``flow-toy``);
- ``guidance_toy``: Flow-NRG reward guidance on the toy base policy (``guidance-toy``);
- ``active_learning``: labelling by reward uncertainty against random order (``active-learning``);
- ``toyworld_tables``: the toy world's oracle against its defects, its annotators against the oracle
  (``oracle-table``, ``annotator-agreement``).

Studies use ``alignment`` (the library) and never the web app; nothing in ``alignment``, ``workers``,
``annotate`` or ``config`` imports them.
"""
