"""Whatever the LLM writes, a TTS receives speakable text: every TTS room's text transforms."""

import re

from pipecat.utils.text.transforms.strip_markdown import strip_markdown

# Emoji and pictographs: a TTS either spells them out or chokes on them.
_EMOJI = re.compile("[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\u200d\ufe0f]++")


async def strip_emoji(text: str, _text_type) -> str:
    return _EMOJI.sub("", text)


SPEAKABLE_TEXT = [("*", strip_markdown), ("*", strip_emoji)]
