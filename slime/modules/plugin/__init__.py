"""The plugin module: PluginManager and EnvoyPlugin -> EnvoyFilters (validated only, for now)."""

from slime.framework.module import validating_module
from slime.modules.plugin.api import ENVOY_PLUGIN, PLUGIN_MANAGER

MODULE = validating_module("plugin", (PLUGIN_MANAGER, ENVOY_PLUGIN),
                           "PluginManager, EnvoyPlugin -> EnvoyFilters")
