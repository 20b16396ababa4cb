"""Salt extension: the ``jailhouse`` execution, state and runner modules.

Salt finds the modules through the ``salt.loader`` entry point this package declares
(``jailhouse = "jailhouse.saltext"``, the salt-extensions convention): its loader looks
for the directories ``modules/``, ``states/`` and ``runners/`` in this package and loads
the files in them itself, giving them the dunders (``__opts__``, ``__salt__``,
``__pillar__``) it gives every module.  Importing this package imports nothing else.

The work is done in :mod:`jailhouse.saltext._common` and :mod:`jailhouse.virt`, which
are plain Python and know nothing of Salt; the module files translate between the two.
"""
