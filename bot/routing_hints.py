"""How a tool describes itself to the router, next to its code: the phrasings that call it, the
values its arguments may take, and when it may be called at all. The router
(`bot/providers/tool_routing.py`) reads these from the tools a context carries
(`routable_tools`); a tool imports only this module, never a service."""

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

from bot.conversation import Messages, current_request, user_texts


def _attach(fn: Callable, hint: str, value: Any) -> None:
    """Keep a routing hint on the tool's function itself, where `routable_tools` reads it."""
    setattr(fn, hint, value)


def routing_examples(*examples: tuple[str, dict[str, Any]]) -> Callable:
    """Attach (utterance, arguments) pairs that show a small model when to call this tool."""

    def decorate(fn: Callable) -> Callable:
        _attach(fn, "routing_examples", list(examples))
        return fn

    return decorate


def argument_choices(**choices: tuple[str, ...]) -> Callable:
    """Declare the allowed values of string arguments. Pipecat's schema from annotations has no
    enums, so they are added here, where the grammar makes any other value impossible."""

    def decorate(fn: Callable) -> Callable:
        _attach(fn, "argument_choices", {name: list(values) for name, values in choices.items()})
        return fn

    return decorate


# Given the conversation so far (OpenAI-format messages) and a tool's JSON-schema parameters,
# the parameters a reply may use now, or None when the tool cannot be called yet.
RoutingConstraint = Callable[[Messages, dict[str, Any]], dict[str, Any] | None]


def routing_constraint(constraint: RoutingConstraint) -> Callable:
    """Narrow what the grammar allows for a tool from the conversation (e.g. only numbers the
    user said). The prompt still shows the whole schema: it is the cached prefix. Stacked
    constraints all apply."""

    def decorate(fn: Callable) -> Callable:
        _attach(fn, "routing_constraints", (constraint, *getattr(fn, "routing_constraints", ())))
        return fn

    return decorate


def requested_when(pattern: str) -> RoutingConstraint:
    """A constraint offering the tool only when the current request, or the user's message
    before it, matches `pattern` (a case-insensitive regular expression): a small model
    otherwise reaches for a tool that a word-level cue rules out, e.g. sentiment analysis for
    a user simply sharing a feeling. The message before counts because a follow-up leans on
    it ("What time is it in Tokyo?" ... "And in Paris?")."""
    cue = re.compile(pattern, re.IGNORECASE)

    def constraint(messages: Messages, parameters: dict[str, Any]) -> dict[str, Any] | None:
        said = " ".join([*user_texts(messages)[-2:], current_request(messages)])
        return parameters if cue.search(said) else None

    return constraint


_CALLED_ALONE = "x-called-alone"


def called_alone(parameters: dict[str, Any]) -> dict[str, Any]:
    """What a constraint returns for a call that chains no other call: one whose arguments it
    narrowed so far that a small model, kept from writing what it meant to, would otherwise
    go on into a chained call of its own making."""
    return {**parameters, _CALLED_ALONE: True}


def only_choice(parameters: dict[str, Any], **values: Any) -> dict[str, Any]:
    """What a constraint returns when the request leaves each named argument one value: the
    call is complete once the tool is chosen (`RoutableTool.determined_arguments`), so a
    small model neither decodes nor second-guesses it."""
    properties = dict(parameters["properties"])
    for name, value in values.items():
        properties[name] = {**properties[name], "enum": [value]}
    required = sorted({*(parameters.get("required") or ()), *values})
    return called_alone({**parameters, "properties": properties, "required": required})


@dataclass(frozen=True)
class RoutableTool:
    name: str
    description: str
    parameters: dict[str, Any]
    examples: list[tuple[str, dict[str, Any]]]
    constraints: tuple[RoutingConstraint, ...] = ()
    alone: bool = False  # its call chains no other (`called_alone`)

    def constrained(self, messages: Messages) -> "RoutableTool | None":
        """This tool as it may be called in reply to `messages`; None when it cannot be."""
        parameters = self.parameters
        for constraint in self.constraints:
            narrowed = constraint(messages, parameters)
            if narrowed is None:
                return None
            parameters = narrowed
        if parameters is self.parameters:
            return self
        alone = bool(parameters.get(_CALLED_ALONE))
        parameters = {k: v for k, v in parameters.items() if k != _CALLED_ALONE}
        return replace(self, parameters=parameters, alone=alone)

    def determined_arguments(self) -> dict[str, Any] | None:
        """The arguments of a call that can only be one thing, or None: it chains no other
        call, takes no property beyond its schema's, and each property is required with a
        single allowed value (a chart type the request named, the one timezone of a city)."""
        properties = self.parameters.get("properties", {})
        required = set(self.parameters.get("required") or ())
        if not self.alone or self.parameters.get("additionalProperties") is not False:
            return None
        arguments = {}
        for name, spec in properties.items():
            choices = spec.get("enum")
            if name not in required or not isinstance(choices, list) or len(choices) != 1:
                return None
            arguments[name] = choices[0]
        return arguments


def routable_tools(tools: ToolsSchema | Any) -> list[RoutableTool]:
    if not isinstance(tools, ToolsSchema):
        return []
    functions = {wrapper.name: wrapper.function for wrapper in tools.direct_functions}
    routable = []
    for schema in tools.standard_tools:
        function = functions.get(schema.name)
        choices = getattr(function, "argument_choices", {})
        properties = {
            name: {**spec, "enum": choices[name]} if name in choices else spec
            for name, spec in schema.properties.items()
        }
        routable.append(
            RoutableTool(
                name=schema.name,
                description=schema.description,
                parameters={
                    "type": "object",
                    "properties": properties,
                    "required": schema.required,
                    "additionalProperties": False,
                },
                examples=getattr(function, "routing_examples", []),
                constraints=getattr(function, "routing_constraints", ()),
            )
        )
    return routable
