"""stub"""
from bench.context import Ctx


async def run(ctx: Ctx) -> None:
    return None
