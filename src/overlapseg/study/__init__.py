"""The study as the workflow sees it: profile + catalogue resolution and checks (``config``),
every results path (``paths``) and the derivations the rules read (``plan``)."""
