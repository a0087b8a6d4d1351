"""Custom operators that segdeploy's engines can load: sources, host builds, plugin builds.

Nothing here is loaded implicitly: an engine loads a plugin library only when the user names it
(``segbuild --plugins`` / ``Runtime(..., plugins=[...])``). Python 3.6 compatible.
"""
