import slime.framework.config  # noqa
