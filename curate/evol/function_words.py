"""English function words: the words a rewrite may hold and still say nothing (Evol's ``no_content`` rule).

Articles, determiners and quantifiers, pronouns, prepositions, conjunctions, auxiliary and modal verbs, the
adverbs of negation, degree, place and time that carry no topic, number words, and the fragments a contraction
leaves once split into words (``don't``: ``don``, ``t``; not ``won``, a verb too). No content word: scikit-learn's
English stop list, used before, also holds ``describe``, ``system``, ``find``, ``fire``, ``bill``, ``detail``,
``show``, ``name`` ..., so a rewrite "Describe the system." counted as saying nothing."""

from __future__ import annotations

FUNCTION_WORDS = frozenset("""
a an the this that these those each every either neither some any no all both few many much more most less least
several such other others another own same whole enough various

i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself we us
our ours ourselves they them their theirs themselves one ones who whom whose which what whatever whoever whomever
whichever anyone anything anybody someone something somebody everyone everything everybody nobody noone nothing
none

about above across after against along amid among amongst around as at before behind below beneath beside besides
between beyond by despite down during except for from in inside into near of off on onto out outside over per
since than through throughout thru till to toward towards under underneath unlike until unto up upon via with
within without

and but or nor so yet if because although though while whilst whereas whether unless once when whenever where
wherever why how then

am is are was were be been being have has had having do does did doing done can cannot could may might must shall
should will would ought

not yes very too also just only even still already again ever never always often sometimes here there now thus
hence therefore however moreover furthermore nevertheless nonetheless otherwise indeed perhaps maybe quite rather
almost else anyway anyhow somehow meanwhile afterwards beforehand elsewhere everywhere anywhere somewhere nowhere
hereafter hereby herein hereupon thereafter thereby therein thereupon whereafter whereby wherein whereupon whence
thence whither former formerly latter latterly namely mostly together please etc eg ie

zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion first
third

s t m d ll re ve don doesn didn isn aren wasn weren hasn haven hadn wouldn couldn shouldn mustn needn cant couldnt
hasnt
""".split())
