"""``charges-v1``: which criminal charge fits a short case description (top-1 accuracy).

In the spirit of LawBench's charge prediction, generated so it fits a small model and a
laptop: each item is a few sentences of facts written from one of several templates per
charge, with unrelated facts mixed in as distractors, and its label is one of the charges
in :data:`CHARGES`. The label set is public (a harness may show it); which label fits an
item is not. No description contains its own label's words.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tasks.base import Item, Splits, Task, check_split_sizes, template_files
from tasks.errors import TaskError

__all__ = ["CHARGES", "ChargesConfig", "ChargesTask", "normalise_charge"]

#: charge → fact templates. Slots: {name} {victim} {place} {item} {amount} {day} {role}.
CHARGES: dict[str, tuple[str, ...]] = {
    "theft": (
        "{name} slipped into {place} while nobody was watching and quietly took {victim}'s "
        "{item}, worth about {amount} yuan, then left without paying.",
        "On {day}, {name} pocketed a {item} from a shelf at {place} and walked out unnoticed.",
    ),
    "robbery": (
        "{name} stopped {victim} near {place}, pulled out a knife and demanded the {item}; "
        "{victim} handed it over in fear.",
        "On {day}, {name} knocked {victim} down outside {place} and forcibly took a bag "
        "holding {amount} yuan.",
    ),
    "fraud": (
        "Posing as a {role}, {name} persuaded {victim} to transfer {amount} yuan for an "
        "investment that never existed.",
        "{name} sold {victim} a fake {item} online, took {amount} yuan and stopped replying.",
    ),
    "embezzlement": (
        "As the cashier of {place}, {name} moved {amount} yuan of company funds into a "
        "personal account over several months.",
        "{name}, who kept the accounts at {place}, quietly kept {amount} yuan of customer "
        "deposits for private use.",
    ),
    "accepting bribes": (
        "While serving as a {role}, {name} took {amount} yuan from a contractor and in "
        "return approved the contractor's bid.",
        "{name}, a {role}, received a {item} from a businessman and then waved through his "
        "permit application.",
    ),
    "offering bribes": (
        "To win a contract at {place}, {name} handed an official {amount} yuan in an envelope.",
        "{name} gave a {role} a {item} so that an inspection of {place} would be skipped.",
    ),
    "intentional injury": (
        "During an argument at {place}, {name} struck {victim} with a bottle, breaking "
        "{victim}'s arm.",
        "On {day}, {name} beat {victim} with a steel pipe, leaving {victim} seriously hurt.",
    ),
    "intentional homicide": (
        "After a long dispute over money, {name} stabbed {victim} several times at {place}; "
        "{victim} died at the scene.",
        "{name} poisoned {victim}'s tea on {day}, intending to end {victim}'s life; "
        "{victim} died that night.",
    ),
    "dangerous driving": (
        "With a blood alcohol level far over the limit, {name} drove a car through the "
        "streets near {place} late on {day}.",
        "{name} raced another car at twice the speed limit on a crowded road near {place}.",
    ),
    "traffic accident": (
        "{name} ran a red light near {place} and hit {victim}, who was crossing; {victim} "
        "died in hospital.",
        "Driving a lorry without checking the mirrors, {name} reversed into {victim} at "
        "{place}, causing fatal injuries.",
    ),
    "drug trafficking": (
        "Police found {name} selling small packets of heroin to buyers outside {place}.",
        "{name} carried 300 grams of methamphetamine across the province to deliver it to a "
        "buyer at {place}.",
    ),
    "illegal possession of firearms": (
        "A search of {name}'s flat turned up two handguns and ammunition kept without any licence.",
        "{name} kept a homemade rifle hidden under the floor of a shed near {place}.",
    ),
    "arson": (
        "Angry at {victim}, {name} poured petrol on the door of {place} and set it alight, "
        "burning the building.",
        "On {day}, {name} deliberately lit a fire in a warehouse at {place}, destroying "
        "goods worth {amount} yuan.",
    ),
    "kidnapping": (
        "{name} seized {victim}'s child outside {place} and demanded {amount} yuan for the "
        "child's return.",
        "{name} held {victim} in a locked van and phoned the family asking for {amount} "
        "yuan in ransom.",
    ),
    "extortion": (
        "{name} threatened to publish private photos of {victim} unless {victim} paid "
        "{amount} yuan.",
        "{name} told a shop owner at {place} that the shop would be wrecked unless {amount} "
        "yuan were paid every month.",
    ),
    "forgery of official documents": (
        "{name} made fake business licences with a copied government seal and sold them to "
        "shop owners.",
        "{name} produced a counterfeit residence permit bearing an official stamp for {victim}.",
    ),
    "smuggling": (
        "{name} hid {amount} cartons of cigarettes in a container and brought them across "
        "the border without declaring them.",
        "At the port near {place}, {name} moved luxury watches into the country concealed "
        "in machine parts to avoid customs duty.",
    ),
    "money laundering": (
        "Knowing the money came from drug sales, {name} passed {amount} yuan through shell "
        "companies to make it look like trade income.",
        "{name} converted a gang's illegal profits of {amount} yuan into gold bars through "
        "a string of front businesses.",
    ),
    "opening a casino": (
        "{name} rented the back rooms of {place} and ran card games there for profit, "
        "taking a cut of every pot.",
        "{name} set up an online betting site and earned {amount} yuan from players' stakes.",
    ),
    "illegal logging": (
        "Without any permit, {name} cut down forty trees in a state forest near {place} and "
        "sold the timber.",
        "{name} hired workers to fell protected trees on a hillside near {place} for lumber.",
    ),
    "credit card fraud": (
        "{name} used a card stolen from {victim} to buy goods worth {amount} yuan at {place}.",
        "{name} applied for cards with a false identity and ran up {amount} yuan of debt "
        "with no intention to repay.",
    ),
    "harbouring criminals": (
        "Knowing his cousin was wanted for robbery, {name} hid him in a flat near {place} "
        "for two months.",
        "{name} gave a wanted suspect money and a place to sleep so that he could avoid the "
        "police.",
    ),
    "obstructing official duties": (
        "When police officers came to {place} to carry out an inspection, {name} pushed "
        "them and blocked the door.",
        "{name} attacked a tax inspector who was checking the books at {place}, stopping "
        "the inspection.",
    ),
    "illegal detention": (
        "Over an unpaid debt, {name} locked {victim} in a room at {place} for three days.",
        "{name} and two friends kept {victim} tied up in a basement near {place} until a "
        "debt was paid.",
    ),
}

_DISTRACTORS = (
    "{name} had worked as a delivery driver for three years.",
    "It was raining heavily that evening.",
    "{name} has no previous criminal record.",
    "A neighbour later said {name} seemed calm that week.",
    "{name} returned home by bus afterwards.",
    "The events took place on {day}.",
    "{name} later told the court he regretted what happened.",
    "A security camera near {place} was not working at the time.",
    "{name} lives with his parents in the same district.",
    "{victim} had known {name} for several years.",
)
_NAMES = ("Zhang", "Li", "Wang", "Chen", "Liu", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu")
_VICTIMS = ("Mr. Sun", "Ms. Ma", "Mr. Hu", "Ms. Guo", "Mr. He", "Ms. Lin", "Mr. Gao")
_PLACES = (
    "a supermarket",
    "a restaurant",
    "the train station",
    "a hotel",
    "a market",
    "a factory",
    "an office building",
    "a car park",
    "a jewellery shop",
    "a school",
)
_ITEMS = ("phone", "laptop", "gold necklace", "watch", "camera", "bicycle", "painting")
_ROLES = ("bank manager", "county official", "police officer", "tax inspector", "doctor")
_DAYS = (
    "a Monday night",
    "a Saturday afternoon",
    "New Year's Eve",
    "a Friday morning",
    "a holiday weekend",
    "a Tuesday evening",
)


def normalise_charge(text: str) -> str:
    """Lower case, single spaces, no surrounding quotes or trailing full stop."""
    text = " ".join(str(text).strip().strip("\"'`").lower().split())
    text = text.removeprefix("the crime of ").removeprefix("charge: ").rstrip(".")
    return text.strip()


@dataclass(frozen=True)
class ChargesConfig:
    train: int = 240
    val: int = 50
    test: int = 50
    distractors: int = 2  # unrelated facts mixed into each description

    def __post_init__(self) -> None:
        check_split_sizes("charges", {"train": self.train, "val": self.val, "test": self.test})
        if self.distractors < 0:
            raise TaskError("charges: distractors must be >= 0")


class ChargesTask(Task):
    id = "charges-v1"
    description = (
        "Charge prediction: each item is a short case description; the answer is the one "
        f"criminal charge, out of {len(CHARGES)}, that the facts describe (for example "
        "'theft' or 'fraud'). The reward is 1.0 for the right charge (case, spacing and a "
        "trailing full stop do not matter) and 0.0 otherwise. The list of charges is public."
    )
    labels: tuple[str, ...] = tuple(CHARGES)

    def __init__(self, seed: int = 0, config: ChargesConfig | None = None) -> None:
        super().__init__(seed)
        self.config = config or ChargesConfig()

    def splits(self, seed: int) -> Splits:
        rng = random.Random(seed)
        sizes = (self.config.train, self.config.val, self.config.test)
        items: list[Item] = []
        seen: set[str] = set()
        while len(items) < sum(sizes):
            charge = rng.choice(self.labels)
            text = _describe(rng, charge, self.config.distractors)
            if text in seen:
                continue  # one description, one split
            seen.add(text)
            items.append(Item(id=f"case-{seed}-{len(items):04d}", prompt=text, answer=charge))
        train, val = sizes[0], sizes[0] + sizes[1]
        return {"train": items[:train], "val": items[train:val], "test": items[val:]}

    def reward(self, item: Item, answer_text: str) -> float:
        if not isinstance(answer_text, str):
            return 0.0
        return 1.0 if normalise_charge(answer_text) == item.answer else 0.0

    def valid_answer(self, answer: str) -> bool | None:
        return normalise_charge(answer) in CHARGES

    def harness_template(self) -> dict[str, bytes]:
        return template_files("tasks.charges")


def _describe(rng: random.Random, charge: str, distractors: int) -> str:
    slots = {
        "name": rng.choice(_NAMES),
        "victim": rng.choice(_VICTIMS),
        "place": rng.choice(_PLACES),
        "item": rng.choice(_ITEMS),
        "amount": str(rng.choice(range(2_000, 500_000, 500))),
        "day": rng.choice(_DAYS),
        "role": rng.choice(_ROLES),
    }
    facts = [rng.choice(CHARGES[charge]).format_map(slots)]
    for extra in rng.sample(_DISTRACTORS, distractors):
        facts.insert(rng.randrange(len(facts) + 1), extra.format_map(slots))
    return " ".join(facts)


def _label_words_absent() -> None:
    """Module check: no template spells its own charge (that would leak the label)."""
    for charge, templates in CHARGES.items():
        for template in templates:
            if charge in template.lower():
                raise TaskError(f"charges: a template of {charge!r} names its charge")


_label_words_absent()
