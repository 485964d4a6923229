"""The synthetic datasets ``calm data prepare`` builds from Debian packages: the demo tasks
(:mod:`~calm.devdata.speech` over :mod:`~calm.devdata.sources`) and the dev tasks that choose calm's
methods and defaults (:mod:`~calm.devdata.devsets`, :mod:`~calm.devdata.drums`, read with
:mod:`~calm.devdata.soundfont`); :mod:`~calm.devdata.recipes` lists them. Builders only: the datasets they
write are read back by :mod:`calm.data` like any other."""
