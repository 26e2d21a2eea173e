"""The library service of examples/fastapi_beanie.py with ODMantic, on asyncmongo.motor_asyncio (the
Motor-compatible client ODMantic is written for): the same HTTP API, the same answers.

    uvicorn examples.fastapi_odmantic:app      (MONGODB_URI, LIBRARY_DB in the environment)
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator, cast

from fastapi import FastAPI, HTTPException, Query, Response
from odmantic import AIOEngine, Field, Model, ObjectId
from odmantic.exceptions import DuplicateKeyError
from pydantic import BaseModel

from asyncmongo.motor_asyncio import AsyncIOMotorClient

if TYPE_CHECKING:
    from motor.motor_asyncio import AsyncIOMotorClient as MotorClient


class Book(Model):
    isbn: str = Field(unique=True)
    title: str
    author: str
    year: int
    copies: int = 1

    model_config = {"collection": "books"}


class Loan(Model):
    book_id: ObjectId
    member: str
    at: datetime

    model_config = {"collection": "loans"}


class BookIn(BaseModel):
    isbn: str
    title: str
    author: str
    year: int
    copies: int = 1


class BookPatch(BaseModel):
    title: str | None = None
    year: int | None = None
    copies: int | None = None


class LoanIn(BaseModel):
    member: str


def _out(instance: Model) -> dict[str, Any]:
    doc = instance.model_dump(mode="json")
    doc["_id"] = doc.pop("id")
    return doc


def make_app(uri: str, db_name: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = AsyncIOMotorClient(uri)
        # ODMantic's annotations name Motor's classes; asyncmongo.motor_asyncio's are drop-ins for
        # them at run time, which a type checker cannot know (the cast does nothing at run time).
        engine = AIOEngine(client=cast("MotorClient[Any]", client), database=db_name)
        await engine.configure_database(cast("list[type[Model]]", [Book, Loan]))
        app.state.engine = engine
        try:
            yield
        finally:
            client.close()  # Motor's close(): synchronous

    app = FastAPI(lifespan=lifespan)

    def engine() -> AIOEngine:
        return cast(AIOEngine, app.state.engine)

    async def get_book(book_id: ObjectId) -> Book:
        book = await engine().find_one(Book, Book.id == book_id)
        if book is None:
            raise HTTPException(404, "no such book")
        return book

    @app.post("/books", status_code=201)
    async def create_book(body: BookIn) -> dict[str, Any]:
        try:
            book = await engine().save(Book(**body.model_dump()))
        except DuplicateKeyError:
            raise HTTPException(409, f"a book with isbn {body.isbn} exists") from None
        return _out(book)

    @app.get("/books")
    async def list_books(
        author: str | None = None, min_year: int | None = None,
        sort: str = Query("title", pattern="^-?(year|title)$"), limit: int = 50,
    ) -> list[dict[str, Any]]:
        queries = []
        if author is not None:
            queries.append(Book.author == author)
        if min_year is not None:
            queries.append(Book.year >= min_year)
        field = getattr(Book, sort.lstrip("-"))
        order = field.desc() if sort.startswith("-") else field.asc()
        books = await engine().find(Book, *queries, sort=order, limit=limit)
        return [_out(b) for b in books]

    @app.get("/books/{book_id}")
    async def read_book(book_id: ObjectId) -> dict[str, Any]:
        return _out(await get_book(book_id))

    @app.patch("/books/{book_id}")
    async def update_book(book_id: ObjectId, body: BookPatch) -> dict[str, Any]:
        book = await get_book(book_id)
        book.model_update(body.model_dump(exclude_none=True))
        return _out(await engine().save(book))

    @app.delete("/books/{book_id}", status_code=204)
    async def delete_book(book_id: ObjectId) -> Response:
        await engine().delete(await get_book(book_id))
        return Response(status_code=204)

    @app.post("/books/{book_id}/loans", status_code=201)
    async def lend(book_id: ObjectId, body: LoanIn) -> dict[str, Any]:
        await get_book(book_id)
        async with engine().transaction() as transaction:
            book = await transaction.find_one(Book, Book.id == book_id)
            if book is None or book.copies < 1:
                await transaction.abort()
                raise HTTPException(409, "no copy left")
            book.copies -= 1
            await transaction.save(book)
            loan = await transaction.save(Loan.model_validate(
                {"book_id": book_id, "member": body.member, "at": datetime.now(timezone.utc)}))
            await transaction.commit()
        return _out(loan)

    return app


app = make_app(os.environ.get("MONGODB_URI", "mongodb://localhost:27017"),
               os.environ.get("LIBRARY_DB", "library"))
