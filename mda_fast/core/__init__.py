"""The attribution core: which parameters a head owns (``heads``), their per-token inputs and output gradients
(``capture``, ``lean_forward``, ``lm_head``), the probes that define a head's function (``probes``,
``text_probes``, ``attention``, ``localize``), the EK-FAC curvature (``ekfac``, ``factors``), the influence scores
(``influence``), non-finite checks (``finite``) and model loading (``model``). Public names are exported from
:mod:`mda_fast`."""
