"""The text sentiment family's own multilingual texts (zh, en, yue, ja, ko): standard library only, data only.

* ``VOCABULARY``: what the openvino int8 variant calibrates on. Reviews, chat lines and complaints of the kind
  the service hears, a few per language, positive, neutral and negative.
* ``PARITY``: what every export is judged on (other sentences than the calibration's), ``UNKNOWN``: a sentence
  with symbols no built vocabulary holds (unknown tokens), and ``long_text()``: a text far longer than the
  truncation bound.
* ``vocabulary_texts()``: what random weights' tokenizers are built from (``text_sentiment.build_tokenizer``):
  VOCABULARY and PARITY, so the parity sentences are tokenized into pieces, not mostly unknown tokens.
"""
from __future__ import annotations

VOCABULARY: dict[str, tuple[str, ...]] = {
    "en": (
        "I love this phone, the battery lasts all day and the camera is great.",
        "The delivery was late again and nobody answered my emails. Terrible service!",
        "It's okay, nothing special. The price is fair for what you get.",
        "Thank you so much for your help, you solved my problem in five minutes.",
        "I'm very disappointed: the screen cracked after two weeks and support refused a refund.",
        "Please call me back tomorrow morning about the invoice.",
        "What a wonderful surprise, the whole team was friendly and helpful!",
        "This is the worst experience I have ever had with a bank.",
    ),
    "zh": (
        "这个手机非常好用，电池很耐用，拍照也很清楚。",
        "快递又迟到了，客服一直不回复，服务太差了！",
        "还可以吧，没有什么特别的，价格还算合理。",
        "非常感谢你的帮助，五分钟就解决了我的问题。",
        "我很失望，屏幕两个星期就坏了，他们还拒绝退款。",
        "请明天上午给我回电话，关于发票的事情。",
        "真是一个惊喜，整个团队都很友好很热情！",
        "这是我遇到过最糟糕的银行服务。",
    ),
    "yue": (
        "呢部手機好好用，電池好耐，影相又清楚。",
        "速遞又遲咗，客服一直都唔覆，服務真係好差！",
        "都OK嘅，冇乜特別，價錢都算合理。",
        "真係好多謝你幫手，五分鐘就搞掂咗我嘅問題。",
        "我好失望，個屏幕兩個禮拜就爛咗，佢哋仲唔肯退錢。",
        "唔該聽日朝早打返俾我，講下張單嘅事。",
        "真係好驚喜，成班同事都好友善好熱情！",
        "呢間銀行係我見過最衰嘅，下次唔會再嚟喇。",
    ),
    "ja": (
        "このスマホはとても使いやすくて、バッテリーも長持ちします。",
        "配達がまた遅れて、サポートも返事をくれません。最悪です！",
        "まあまあです。特に良くも悪くもありません。",
        "助けていただいて本当にありがとうございます。すぐに解決しました。",
        "とてもがっかりしました。画面が二週間で割れて、返金も断られました。",
        "請求書について、明日の朝に折り返しお電話ください。",
        "チームのみなさんが親切で、素晴らしい体験でした！",
        "こんなにひどい銀行の対応は初めてです。",
    ),
    "ko": (
        "이 휴대폰 정말 좋아요, 배터리도 오래가고 카메라도 훌륭해요.",
        "배송이 또 늦었고 아무도 답장을 안 해요. 서비스가 최악이에요!",
        "그냥 괜찮아요, 특별한 건 없어요. 가격은 적당해요.",
        "도와주셔서 정말 감사합니다, 오 분 만에 문제를 해결해 주셨어요.",
        "너무 실망했어요. 화면이 이 주 만에 깨졌는데 환불도 거절당했어요.",
        "청구서 때문에 내일 아침에 다시 전화 주세요.",
        "정말 놀라운 경험이었어요, 팀 모두가 친절하고 도움이 되었어요!",
        "이 은행의 대응은 제가 겪은 것 중 최악이에요.",
    ),
}

# Judged on: other sentences in every language (their characters partly outside VOCABULARY), plus the long text.
PARITY: dict[str, tuple[str, ...]] = {
    "en": ("Great job, I'm really happy with the new update!", "The app keeps crashing and I lost all my notes."),
    "zh": ("今天的会议很顺利，大家都很满意。", "等了两个小时还没有人来修理，真让人生气。"),
    "yue": ("佢哋嘅服務好好，我下次仲會再嚟。", "部機冇反應，打咗三次電話都冇人理，嬲死！"),
    "ja": ("新しいアップデートはとても便利で気に入っています。", "何度電話してもつながらず、本当に困っています。"),
    "ko": ("새 업데이트가 정말 마음에 들어요!", "앱이 계속 꺼져서 너무 짜증나요."),
}


# Its emoji and stars are in no vocabulary built from vocabulary_texts(): they exercise the unknown token.
UNKNOWN = "客服回覆好快 \U0001F44D ★★★★★ great!"


def long_text() -> str:
    """A text of every language's sentences, several times: far past any truncation bound (128 tokens)."""
    return " ".join(s for _ in range(3) for sentences in PARITY.values() for s in sentences)


def vocabulary_texts() -> list[str]:
    return [s for table in (VOCABULARY, PARITY) for sentences in table.values() for s in sentences]


def parity_texts() -> list[str]:
    """Every parity sentence, the sentence with unknown symbols, then the long text (last)."""
    return [s for sentences in PARITY.values() for s in sentences] + [UNKNOWN, long_text()]
