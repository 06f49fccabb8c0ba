"""The boot module's own config (``general`` of its module config): which images it deploys.

The Helm chart sets ``image`` to the image the boot operator itself runs, so that every module
runs the same build.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from slime.framework.api import SlimeModel

DEFAULT_IMAGE = "slime:0.1.0"  # the package version; a test keeps them equal
DEFAULT_ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"
# Upstream's Go builds (slime-lazyload, slime-plugin, slime-bundle-all, slime-global-sidecar, ...),
# under any registry host: their entrypoint is not `slime`, so they cannot run our modules.
UPSTREAM_IMAGE = re.compile(r"(^|.*/)slimeio/slime-[a-z0-9.-]+$")


class BootConfig(SlimeModel):
    """The boot module's ``general`` config."""

    image: str = Field(default=DEFAULT_IMAGE, min_length=1,
                       description="Image of a module whose SlimeBoot names none (or names upstream's)")
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy with that image")
    envoyImage: str = Field(default=DEFAULT_ENVOY_IMAGE, min_length=1,
                            description="Image of the global-sidecar (a plain Envoy) when the SlimeBoot names none "
                                        "(or names upstream's)")
    upstreamImages: Literal["replace", "keep"] = Field(
        default="replace", description="replace: upstream's Go images (slimeio/slime-*) are replaced by image and "
                                       "envoyImage, and status.notes says so; keep: deploy them as given")


def is_upstream_image(repository: str) -> bool:
    return bool(UPSTREAM_IMAGE.match(repository.split("@")[0]))
