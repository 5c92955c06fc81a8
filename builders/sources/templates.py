"""Instruction templates, written for this suite (GPT4RoI uses about 20 per task; so do we).

``{region}`` is replaced by a ``<regionK>`` placeholder. Templates are drawn per row with
:func:`builders.seeding.row_rng`, so a build is reproducible.
"""

from __future__ import annotations

import random

REGION_CATEGORY = [
    "What kind of object is {region}?",
    "Which category does {region} belong to?",
    "Name the category of the object in {region}.",
    "What is shown in {region}? Answer with a category name.",
    "Tell me the class of {region}.",
    "Classify the object inside {region}.",
    "What is the object at {region}?",
    "Which of the listed categories fits {region}?",
    "Give the category of {region}.",
    "What type of thing does {region} contain?",
    "Identify the object in {region} by its category.",
    "In one or two words, what is {region}?",
    "What would you call the object in {region}?",
    "Label {region} with its category.",
    "Look at {region}. Which category is it?",
    "What category should {region} be assigned?",
    "Which object class is found in {region}?",
    "Say what {region} is.",
    "Pick the category that describes {region}.",
    "What is {region}, category-wise?",
]

CATEGORY_VOCABULARY = [
    "The objects in this picture come from these categories: {names}.",
    "Possible categories: {names}.",
    "Every object here belongs to one of: {names}.",
    "Use this list of categories for the answers: {names}.",
    "Category vocabulary for this image: {names}.",
]

REGION_CAPTION_SHORT = [
    "Give a short phrase that singles out {region}.",
    "Briefly describe {region} so that someone could find it.",
    "Write a short referring expression for {region}.",
    "How would you point out {region} in a few words?",
    "Describe {region} in a short phrase.",
    "Which object is {region}? Answer with a brief description.",
    "Refer to {region} with a few words.",
    "In a short phrase, what is in {region}?",
    "Name {region} briefly, in a way that tells it apart from the rest.",
    "Say in a few words what {region} shows.",
    "Provide a brief expression identifying {region}.",
    "What short description fits {region}?",
    "Summarise {region} in one short phrase.",
    "Tell me briefly about {region}.",
    "Give a compact description of {region}.",
    "A few words for {region}, please.",
    "Describe the object in {region} concisely.",
    "How would you refer to {region}, briefly?",
    "Write a brief phrase for the object at {region}.",
    "Caption {region} in a few words.",
]

# RefCOCO+ annotators were told not to use absolute position words, so its prompts ask for appearance.
REGION_CAPTION_SHORT_APPEARANCE = [
    "Describe how {region} looks, in a short phrase.",
    "Give a short description of the appearance of {region}.",
    "What does {region} look like? Answer briefly.",
    "In a few words, describe the look of {region}.",
    "Briefly say what is distinctive about the appearance of {region}.",
    "Which visual features set {region} apart? Keep it short.",
    "Describe {region} by its appearance, in a few words.",
    "Give a short phrase about what {region} looks like.",
    "How does {region} appear? A short phrase is enough.",
    "Tell me briefly what {region} looks like.",
    "Name {region} by its looks, briefly.",
    "Describe the colour, clothing or shape of {region} in a few words.",
    "A short appearance-based description of {region}, please.",
    "What is {region}, judging by its appearance? Be brief.",
    "Briefly describe the visible attributes of {region}.",
    "Write a short phrase on how {region} looks.",
    "Characterise {region} by its appearance in a few words.",
    "Use a few words to describe the look of {region}.",
    "What visual traits does {region} have? Answer briefly.",
    "Describe {region}'s appearance concisely.",
]

REGION_CAPTION = [
    "Can you describe {region} in detail?",
    "Write a description of {region}.",
    "What can you tell me about {region}?",
    "Describe what is happening in {region}.",
    "Give a sentence that describes {region}.",
    "Please describe the content of {region}.",
    "Explain what {region} shows.",
    "What is going on in {region}?",
    "Write a caption for {region}.",
    "Tell me about the object in {region} and its surroundings.",
    "Describe {region} as precisely as you can.",
    "How would you describe {region} to someone who cannot see it?",
    "Provide a description of the area {region}.",
    "What do you see in {region}?",
    "Give a detailed caption of {region}.",
    "Describe the region {region}.",
    "Put {region} into words.",
    "What does {region} depict?",
    "Summarise the content of {region} in a sentence.",
    "Could you caption the area marked {region}?",
]

MULTI_REGION_DESCRIBE = [
    "Write one sentence that describes the image and mentions {regions}.",
    "Describe the picture in a sentence that covers {regions}.",
    "Give a caption of the image that involves {regions}.",
    "Tell me what is happening, referring to {regions}.",
    "Describe the scene with {regions} in a single sentence.",
    "Write a caption that talks about {regions}.",
    "In one sentence, how do {regions} fit into the picture?",
    "Summarise the image in a sentence mentioning {regions}.",
    "Caption this picture so that the caption covers {regions}.",
    "What is going on in the image? Your sentence should cover {regions}.",
    "Please describe the image, including {regions}.",
    "Produce a sentence about the scene that includes {regions}.",
    "Give a one-sentence description involving {regions}.",
    "Describe the photo and what {regions} show.",
    "Write a short caption of the picture covering {regions}.",
    "Describe what {regions} are doing in the picture.",
    "Tell me, in a sentence, about the image and {regions}.",
    "Caption the image with respect to {regions}.",
    "Write a sentence on the picture's content, touching on {regions}.",
    "Give a description of this image that explains {regions}.",
]

MULTI_REGION_MATCH = [
    "Which part of your description corresponds to {region}?",
    "What phrase in the description refers to {region}?",
    "Which words of the caption describe {region}?",
    "Point out the phrase of your sentence that matches {region}.",
    "In your description, what is {region}?",
    "Which part of the sentence is about {region}?",
    "Quote the phrase from your description that names {region}.",
    "How did your caption refer to {region}?",
    "What did you call {region} in the description?",
    "Which expression in the caption goes with {region}?",
    "Find the phrase in your sentence for {region}.",
    "Which words in the description point to {region}?",
    "Name the part of the caption that describes {region}.",
    "What in your sentence matches {region}?",
    "Tell me the phrase you used for {region}.",
    "Which mention in the description belongs to {region}?",
    "Give the phrase from the caption that stands for {region}.",
    "What part of your answer refers to {region}?",
    "Which portion of the caption is {region}?",
    "Show me the words of your description that match {region}.",
]

REGION_REASONING_PREFIX = [
    "Answer the question about the picture, in which {regions} mark objects you may need.",
    "The picture contains {regions}. Use them to answer.",
    "Look at {regions} in the image and answer the question.",
    "With {regions} in mind, answer the following question.",
    "Refer to {regions} as needed and answer.",
    "These regions may help: {regions}. Now answer the question.",
    "Consider {regions} and respond to the question.",
    "Taking {regions} into account, what is the answer?",
    "Using what you see in {regions}, answer this.",
    "The question mentions objects shown as {regions}. Answer it.",
    "Keeping {regions} in view, please answer.",
    "Study {regions} in the picture, then answer.",
    "Here are the relevant objects: {regions}. Answer the question.",
    "Answer based on the image and on {regions}.",
    "The marked objects are {regions}. Reply to the question.",
    "Think about {regions} and answer the question below.",
    "Objects of interest: {regions}. Please answer.",
    "Examine {regions} and give your answer.",
    "Given {regions} in the picture, answer the question.",
    "With reference to {regions}, answer this question.",
]

DETECTION_PREAMBLE = [
    "Some objects were detected in the image: {regions}.",
    "A detector found these regions in the picture: {regions}.",
    "The image contains detected objects at {regions}.",
    "Detected regions for reference: {regions}.",
    "You may use these detected regions: {regions}.",
]

PRESENCE_QUESTION = "Is there a {label} in the image?"


def pick(rng: random.Random, templates: list[str], **fields: str) -> str:
    """A template drawn with ``rng`` and filled with ``fields``."""
    return rng.choice(templates).format(**fields)


def join_regions(placeholders: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(placeholders) <= 1:
        return "".join(placeholders)
    return ", ".join(placeholders[:-1]) + " and " + placeholders[-1]
