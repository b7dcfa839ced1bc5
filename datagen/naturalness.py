"""A soft, offline check of naturalness: formulas that machine-written Korean chat overuses.

Counselling-manual reflection ("많이 허탈하셨을 것 같아요"), translationese ("어떤 걸 얻고 싶으세요?"),
written words in chat ("또한", "~로 인해"), honorific slips ("그게 더 크셨군요"). Each `Pattern` is a
regular expression with one sentence it must match and one natural sentence it must not (tests check
both). They are COUNTED, never a reason to reject: a person says "그 마음 이해해요" now and then, but a
dataset where every third reply does teaches a counsellor, not a friend. `datagen seeds check` lists the
hits per record and per type; `datagen curate` counts them in report.json. The list was written with
`seeds/STYLE.md`, from a native read of seed and generated dialogues; the patterns judged to fire on
natural chat too often ("~해 보는 건 어떨까요", "~하는 게 중요해요", formal 습니다 endings) are left out.

Only assistant turns are scanned (the persona is what the model learns), with quoted speech removed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

from datagen.schema import Dialogue
from datagen.text import strip_quotes

@dataclass(frozen=True)
class Pattern:
    name: str
    kind: str
    """counselling, translationese, written or honorific."""
    regex: str
    bad: str
    """A sentence it matches."""
    good: str
    """A natural sentence it must not match."""
    needles: tuple[str, ...]
    """Strings one of which every match contains: a text with none is skipped without running the regex
    (`in` on a short string costs ~50 ns; the 37 regexes over a record ~180 µs, measured)."""

    @cached_property
    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.regex)


PATTERNS: tuple[Pattern, ...] = (
    Pattern("reflective_honorific_guess", "counselling", r"셨을\s?(?:것|거)\s?같(?:아요|네요|습니다|아서|은데)",
            '발표 준비를 그렇게 했는데 많이 허탈하셨을 것 같아요.', '아마 사장님이 먼저 연락했을 거예요.', ('셨을',)),
    Pattern("reflective_feeling_guess", "counselling", r"(?:힘드|힘들|속상하|속상|서운하|서운|답답하|답답|막막하|막막|불안하|불안|허탈하|허탈|외로우|외로|무서우|무서|두려우|두려|서러우|서러|억울하|억울|괴로우|괴로|섭섭하|섭섭|지치|지쳤|아프|아팠|슬프|슬펐|당황스러우|당황스러|실망스러우|실망스러|부담스러우|부담스러|상처|놀라|놀랐|긴장하|긴장|후회|무거우|무거|벅차|벅찼|뿌듯하|뿌듯|설레|설렜|기쁘|기뻤|행복하|행복)[가-힣]{0,3}(?:었|았|웠|했|였|쳤|팠|펐|랐)을\s?(?:것|거)\s?같(?:아|네)",
            '그 말 듣고 진짜 서운했을 것 같아.', '그 가게 아마 작년에 문 닫았을 것 같아.', ('같아', '같네')),
    Pattern("reflective_seem_state", "counselling", r"(?:지쳐|힘들어하고|애쓰고|고민하고|버티고|견디고|참고)\s?(?:계신|있는|계셨던|있었던)\s?(?:것|거)\s?같(?:아요|네요|아)",
            '요즘 많이 지쳐 계신 것 같아요.', '지금 회의 중이라 좀 있다 연락할게요.', ('같아', '같네')),
    Pattern("how_hard_it_must_be", "counselling", r"얼마나\s?[가-힣]{1,8}을지\s?(?:상상|짐작|감히|다\s?알|알\s?것|이해)",
            '그동안 얼마나 힘드셨을지 감히 짐작도 안 돼요.', '얼마나 걸릴지 모르겠어, 길이 막혀서.', ('얼마나',)),
    Pattern("reflective_summary", "counselling", r"(?:결국|어쩌면|사실은|그러니까)\s?[^.?!\n]{2,40}(?:던|버린|싶은|싶었던|있었던)\s?(?:거|것)(?:네요|군요|였네요|였군요|구나|였구나)",
            '결국 인정받고 싶은 마음이 컸던 거네요.', '결국 우리 둘 다 틀렸네 ㅋㅋ', ('네요', '군요', '구나')),
    Pattern("feeling_is_natural", "counselling", r"(?:건|게|것은|것도|거는)\s?(?:너무\s?|아주\s?|정말\s?|지극히\s?|충분히\s?|당연히\s?)?(?:자연스러운|정상적인|당연한)\s?(?:거|것|일|반응|감정|마음|현상)(?:이에요|예요|이야|야|입니다|이죠|죠|이지|이고|이니까)",
            '그런 감정이 드는 건 너무 자연스러운 일이야.', '그건 당연한 거 아냐? 돈을 냈는데.', ('자연스러운', '정상적인', '당연한')),
    Pattern("emotion_validation", "counselling", r"(?:감정|마음|느낌)(?:은|도|이|들은|들도)?\s?(?:다\s?|모두\s?|전부\s?)?(?:소중|타당|정당|존중받|틀린\s?게\s?아니|잘못된\s?게\s?아니)",
            '지금 느끼는 감정은 다 소중해요.', '마음이 편해야 일도 잘 되지.', ('소중', '타당', '정당', '존중받', '틀린', '잘못된')),
    Pattern("feeling_permission", "counselling", r"(?:느끼셔도|느껴도|슬퍼하셔도|슬퍼해도|힘들어하셔도|힘들어해도|약해져도|쉬어\s?가셔도)\s?(?:괜찮아요|괜찮아|돼요|됩니다|괜찮습니다)",
            '그렇게 느껴도 괜찮아.', '오늘은 그냥 쉬어도 돼. 내가 할게.', ('괜찮', '돼요', '됩니다')),
    Pattern("fully_understandable", "counselling", r"(?:충분히|너무나|백번)\s?(?:이해(?:가\s?)?(?:돼|되|할\s?수|해요|합니다)|공감(?:이\s?)?(?:돼|되|해요|합니다)|그럴\s?(?:수|만)|그러실\s?(?:수|만))",
            '지금 느끼는 불안도 충분히 이해가 돼.', '그럴 수 있지. 나도 그랬어.', ('충분히', '너무나', '백번')),
    Pattern("fully_capable", "counselling", r"충분히\s?(?:잘\s?하고|잘하고|잘\s?해\s?오|잘\s?해\s?내|잘하[실셨]|해내|하실\s?수\s?있|할\s?수\s?있|잘\s?하실|멋진|괜찮은\s?사람|가치)",
            '충분히 잘하고 계세요.', '시간은 충분히 있어요, 천천히 오세요.', ('충분히',)),
    Pattern("understand_that_feeling", "counselling", r"(?:그|그런|그\s?답답한|그\s?불안한|그\s?서운한)\s?(?:마음|기분|감정|심정)(?:이|은|도)?\s?(?:충분히\s?|정말\s?|너무\s?|다\s?)?(?:이해(?:해요|돼요|가\s?돼요|해|돼|가\s?돼|합니다|가\s?가요|가\s?가)|알\s?것\s?같|느껴져요|전해져요|느껴지네요)",
            '그 마음 충분히 이해해요.', '그 기분 알지 ㅋㅋ 월요일 아침 같은 거.', ('마음', '기분', '감정', '심정')),
    Pattern("lets_talk_about", "counselling", r"(?:에\s?대해(?:서)?|에\s?관해(?:서)?)\s?(?:좀\s?|조금\s?|같이\s?|함께\s?|더\s?|조금\s?더\s?|천천히\s?)*(?:이야기|얘기)(?:를\s?)?\s?(?:해\s?볼까|나눠\s?볼까|나눠\s?보는|해\s?보는\s?(?:건|것)|해\s?보면\s?(?:어떨|좋을))|(?:함께|같이)\s?(?:한번\s?|하나씩\s?|천천히\s?)?(?:생각|정리|고민)해\s?볼까요",
            '그 일에 대해 조금 더 이야기해 볼까요?', '그거에 대해 걔랑 얘기해 봤어?', ('대해', '관해', '볼까요')),
    Pattern("trying_might_help", "counselling", r"(?:해\s?)?보는\s?(?:것도|것은|건|게)\s?(?:좋을\s?(?:것|거)\s?같|도움이\s?될|좋은\s?방법|하나의\s?방법)|도움이\s?될\s?(?:수도\s?)?있을\s?(?:것|거)\s?같아요",
            '일기를 써 보는 것도 좋을 것 같아요.', '한번 입어 보는 게 나아. 사이즈가 제각각이라.', ('보는', '도움이')),
    Pattern("what_part_hardest", "counselling", r"어떤\s?(?:부분|점)(?:이|에서|이\s?제일|이\s?가장|이\s?특히)\s?(?:가장\s?|제일\s?|특히\s?)?(?:힘드|힘들|걱정|마음에\s?걸리|어려우|어렵|신경\s?쓰이|불안|부담|속상|서운|마음이\s?쓰이)",
            '어떤 부분이 제일 힘드세요?', '어떤 메뉴가 제일 맛있어요?', ('어떤',)),
    Pattern("self_care_formula", "counselling", r"(?:스스로|자신|자기\s?자신)(?:을|를|에게|한테)\s?(?:너무\s?|좀\s?|조금\s?더\s?|더\s?)?(?:칭찬|다독|돌보|돌봐|아껴|몰아붙|탓하|믿어|토닥|챙겨|용서|돌아보|되돌아보)|잘\s?버텨\s?(?:오셨|왔어|오신|온\s?거)",
            '자신을 너무 몰아붙이지 마세요.', '스스로 하겠다고 해서 그냥 뒀어.', ('스스로', '자신', '자기', '버텨')),
    Pattern("always_here", "counselling", r"(?:언제든(?:지)?|항상|언제나)\s?(?:여기|곁에|옆에|이\s?자리에)\s?(?:있|있을)|(?:언제든(?:지)?|편하게)\s?(?:다시\s?)?(?:찾아\s?주세요|이야기해\s?주세요|얘기해\s?주세요|말씀해\s?주세요|털어놓으세요)",
            '힘들 때 언제든 이야기해 주세요.', '나 여기 있을게, 천천히 와.', ('언제', '항상', '편하게')),
    Pattern("how_did_it_feel", "counselling", r"(?:기분|마음|감정)(?:은|이|이\s?좀)?\s?(?:어떠(?:셨어요|셨나요|세요|신가요|셨는지)|어떤가요|어땠나요|어떠셨을까요)",
            '그 말을 들었을 때 기분이 어떠셨어요?', '날씨 어때요? 거기도 비 와요?', ('어떠', '어떤가', '어땠')),
    Pattern("service_closing", "counselling", r"도움이\s?(?:되셨|되었|됐)(?:길|으면\s?좋겠|기를)|도움이\s?필요하시면|(?:도와|안내해|확인해|연결해)\s?드리겠습니다|무엇이든\s?(?:물어|말씀)",
            '조금이나마 도움이 되었으면 좋겠어요.', '이거 진짜 도움 됐어, 고마워.', ('도움이', '드리겠', '무엇이든')),
    Pattern("want_to_get_out_of", "translationese", r"얻고\s?싶으(?:세요|신|셨)|(?:무엇|뭘|무얼|뭐를|어떤\s?(?:걸|것을?))\s?얻(?:고|으셨|으시|으면|어\s?가)",
            '이번 여행에서 어떤 걸 얻고 싶으세요?', '이번 여행 뭐 하고 싶어요? 쉬러 가요?', ('얻',)),
    Pattern("third_person_pronoun", "translationese", r"(?<![가-힣])(?:그녀(?:는|가|에게|를|의|랑|와|도|한테|하고|만)?|그(?:는|의|에게|에겐))(?![가-힣])",
            '그녀에게 먼저 연락해 보는 건 어때?', '그 친구한테 먼저 연락해 봐.', ('그녀', '그는', '그의', '그에게', '그에겐')),
    Pattern("second_person_dangsin", "translationese", r"(?<![가-힣])당신(?:은|이|의|을|에게|께|도|만|한테|이라면|이야말로)?(?![가-힣])",
            '저는 당신이 잘 해낼 거라고 믿어요.', '잘하실 거예요. 당신이라는 노래 알아요?', ('당신',)),
    Pattern("through_x_grow", "translationese", r"(?:을|를)\s?통(?:해|하여)(?:서)?\s?(?:[가-힣]+\s?){0,3}?(?:배우|배웠|성장|깨닫|깨달|느끼|느꼈|얻|해소|극복|발견|찾았|찾게)",
            '그 경험을 통해 많이 성장했어요.', '친구를 통해서 알게 됐어요.', ('통해', '통하여')),
    Pattern("make_me_adj", "translationese", r"(?:나|저|너|우리|당신|사람)(?:를|을)\s?(?:더\s?|좀\s?|조금\s?)?(?:강하|성장하|단단하|나아지|행복하|특별하|깨닫|돌아보|생각하|성숙하)게\s?(?:만들|해\s?줬|해\s?주었)",
            '그 경험이 나를 더 강하게 만들어 줬어.', '진짜 사람 미치게 하네 ㅋㅋ', ('만들', '해 줬', '해줬', '해 주었', '해주었')),
    Pattern("good_question", "translationese", r"(?:좋은|훌륭한|멋진|흥미로운)\s?질문(?:이에요|이네요|입니다|이야|이다|이군요|이세요)",
            '그건 정말 좋은 질문이에요.', '질문 있으면 편하게 물어봐요.', ('질문',)),
    Pattern("clause_decision", "translationese", r"(?:는|하는|할|기로\s?한)\s?결정을\s?(?:내리|내렸|내린|내려)",
            '회사를 그만두는 결정을 내렸어요.', '결정 내리기가 너무 힘들어.', ('결정',)),
    Pattern("like_doing_geot", "translationese", r"[가-힣]는\s?것을\s?(?:좋아|싫어|즐기|즐겨|선호|추천)",
            '저는 커피를 마시는 것을 좋아해요.', '저 커피 마시는 거 좋아해요.', ('것을',)),
    Pattern("geot_pronoun", "written", r"(?<![가-힣])(?:그것|이것|저것)(?:은|이|을|에\s?대해)(?![가-힣])",
            '그것은 선택의 문제예요.', '그건 좀 아닌 것 같아요.', ('그것', '이것', '저것')),
    Pattern("written_connective", "written", r"(?:^|[\s.,!?])(?:또한|따라서|그러므로|즉|아울러|더불어|요컨대|그럼에도\s?불구하고)(?=[\s,])",
            '또한 그 방법은 시간이 오래 걸려요.', '나도 또 늦었어 ㅋㅋ 즉석떡볶이 먹자.', ('또한', '따라서', '그러므로', '즉', '아울러', '더불어', '요컨대', '불구하고')),
    Pattern("written_postposition", "written", r"(?:으로|로)\s?인(?:해|하여|한)|함으로써|(?:을|를)\s?바탕으로|(?:을|를)\s?비롯(?:해|한|하여)|에\s?있어(?:서)?\s?(?:중요|가장|핵심)",
            '스트레스로 인해 잠을 못 자요.', '집에 있어서 몰랐어. 무슨 일이야?', ('인해', '인하여', '인한', '함으로써', '바탕', '비롯', '있어')),
    Pattern("essay_genitive_metaphor", "written", r"(?:삶|인생|마음|일상|하루|여행|관계|시간|감정)의\s?(?:여백|무게|온도|결|균형|속도|조각|의미|방향|쉼표)",
            '장소보다 삶의 여백이 더 중요한 여행이에요.', '하루의 반을 회사에서 보내잖아.', ('의',)),
    Pattern("interestingly_frame", "written", r"(?:흥미로운|놀라운|재미있는|재밌는|신기한|아이러니한)\s?(?:점은|건|게|것은)\s?,|흥미로운\s?(?:점|건|게|것)",
            '재밌는 게, 그 카페가 원래 세탁소였대요.', '재밌는 거 보여 줄까? ㅋㅋ', ('흥미', '놀라운', '재미있는', '재밌는', '신기한', '아이러니')),
    Pattern("uncontracted_forms", "written", r"하였|되었(?=[가-힣])|되어(?:요|서\s?기뻐)",
            '그 일을 하다 보니 많이 성장하게 되었어요.', '그렇게 됐어요. 덕분에 잘 끝났어요.', ('하였', '되었', '되어')),
    Pattern("double_si", "honorific", r"(?:실|셨)\s?수\s?있으(?:실|셨|시)|(?:시|셨)겠으(?:시|셨)|계시실|하시셨",
            '충분히 하실 수 있으실 거예요.', '하실 수 있을 거예요.', ('있으실', '있으셨', '있으시', '겠으', '계시실', '하시셨')),
    Pattern("reflective_gunyo", "counselling", r"(?:많이\s?|정말\s?|너무\s?|얼마나\s?)?(?:힘드|속상하|서운하|답답하|막막하|불안하|허탈하|외로우|무서우|두려우|서러우|억울하|괴로우|섭섭하|지치|아프|슬프|당황스러우|실망스러우|부담스러우|놀라|당황하|긴장하|상처받으|마음고생하|고생하|걱정되|걱정하)셨군요|고생\s?(?:많이\s?)?하셨군요",
            '혼자 다 챙기느라 많이 힘드셨군요.', '아 그러셨군요. 몰랐네요.', ('군요',)),
    Pattern("thanks_for_sharing", "counselling", r"(?:(?:이야기|얘기|마음|속마음|고민)(?:을|를)?\s?(?:해|꺼내|털어놔|털어놓아|나눠)\s?주셔서|(?:이야기|속마음|고민)(?:을|를)?\s?(?:해|꺼내|털어놔|털어놓아|나눠)\s?줘서|(?:솔직하게|용기\s?내서|용기\s?내어)\s?(?:말해|얘기해|이야기해)\s?(?:주셔서|줘서))\s?(?:정말\s?|너무\s?)?(?:고마|감사)",
            '이렇게 솔직하게 이야기해 주셔서 감사해요.', '아... 말해 줘서 고마워. 많이 놀랐겠다.', ('고마', '감사')),
    Pattern("sounds_like", "translationese", r"(?:것|거)\s?(?:처럼|같이)\s?들(?:려요|리네요|려|리는군요|립니다|리는데요|리기도)",
            '많이 지친 것처럼 들려요.', '오히려 그게 더 자연스럽게 들려요.', ('들려', '들리', '들립')),
    Pattern("honorific_on_thing", "honorific", r"(?:그게|이게|저게|그건|이건|그\s?부분이|커피|음료|주문하신\s?[가-힣]+|메뉴|음식|케이크|사이즈|물건|택배|상품|가격|카페|가게|날씨)(?:가|이|는|은|도)?\s?(?:더\s?|많이\s?|제일\s?|좀\s?|가장\s?|훨씬\s?|진짜\s?|정말\s?|요즘\s?)?(?:[가-힣]{1,4}\s)?(?:크|작으|많으|적으|비싸|예쁘|멋있으|맛있으|높으|낮으|넓으|좁으|무거우|가벼우|유명하|나오|품절되|도착하)(?:셨|시)",
            '아, 그게 더 크셨군요.', '그게 더 편하시겠어요. 그건 억울하셨겠어요.', ('셨', '시')),
)


# Which needles a message holds (~100 substring tests in C), then only the patterns needing one of them run.
_ALL = sorted({n for p in PATTERNS for n in p.needles})


@dataclass(frozen=True)
class Hit:
    pattern: str
    kind: str
    message: int
    """Index of the message in the dialogue."""
    text: str
    """What matched."""

    def __str__(self) -> str:
        return f"{self.pattern} ({self.kind}) in message {self.message}: {self.text!r}"


def unnatural(d: Dialogue) -> list[Hit]:
    """Every pattern match in the assistant's turns, quoted speech left out.

    >>> d = Dialogue.build("ISFJ", "번아웃", [{"role": "user", "content": "요즘 너무 지쳐요."},
    ...     {"role": "assistant", "content": "많이 지치셨을 것 같아요. 언제부터 그랬어요?"}])
    >>> [h.pattern for h in unnatural(d)]
    ['reflective_honorific_guess']
    """
    hits = []
    for i, m in enumerate(d.messages):
        if m["role"] != "assistant":
            continue
        text = strip_quotes(m["content"])
        present = {n for n in _ALL if n in text}
        for p in PATTERNS:
            if present.isdisjoint(p.needles):
                continue
            for found in p.compiled.finditer(text):
                hits.append(Hit(p.name, p.kind, i, found.group(0).strip()))
    return hits


KIND = {p.name: p.kind for p in PATTERNS}


def summarise(found: Iterable[tuple[str, Iterable[str]]]) -> dict:
    """Counts for a report from `(type, pattern names hit)` per record: records with a hit, hits per record,
    per kind, per pattern and per type.

    >>> summarise([("ISTJ", ["reflective_gunyo"]), ("ENFP", [])])["hits_per_record"]
    0.5
    """
    n = flagged = 0
    by_pattern: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    for mbti, names in found:
        names = list(names)
        n += 1
        flagged += bool(names)
        by_pattern.update(names)
        by_type[mbti] += len(names)
    by_kind: Counter[str] = Counter()
    for name, c in by_pattern.items():
        by_kind[KIND[name]] += c
    total = sum(by_pattern.values())
    return {"records": n, "records_with_hits": flagged, "hits": total,
            "hits_per_record": round(total / n, 3) if n else 0.0,
            "by_kind": dict(by_kind.most_common()), "by_pattern": dict(by_pattern.most_common()),
            "by_type": {t: c for t, c in by_type.items() if c}}
