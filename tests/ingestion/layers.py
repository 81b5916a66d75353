"""Channel layers that fail on demand: test doubles of the outside dependency (Redis
behind channels-redis), configured through CHANNEL_LAYERS like the real one."""

from channels.layers import InMemoryChannelLayer


class BreakableLayer(InMemoryChannelLayer):
    """The in-memory layer, whose ``group_send`` raises while ``broken`` is set, as
    channels-redis does while Redis is away."""

    broken = False
    failures = 0

    async def group_send(self, group, message):
        if self.broken:
            self.failures += 1
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return await super().group_send(group, message)


class FailsToStartOnceLayer(InMemoryChannelLayer):
    """A layer whose first construction fails (Redis unreachable as the process starts)."""

    attempts = 0

    def __init__(self, **kwargs):
        type(self).attempts += 1
        if type(self).attempts == 1:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        super().__init__(**kwargs)
