"""A FastAPI service with Beanie documents on asyncmongo's AsyncMongoClient (PyMongo's async API, so
Beanie runs on it unchanged): a small library of books with loans.

    uvicorn examples.fastapi_beanie:app        (MONGODB_URI, LIBRARY_DB in the environment)

    POST   /books              {"isbn", "title", "author", "year", "copies"}  -> 201, 409 if the
                                                                                 isbn exists
    GET    /books?author=&min_year=&sort=year|-year|title&limit=            -> 200 [...]
    GET    /books/{id}                                                      -> 200, 404
    PATCH  /books/{id}         {"title"?, "year"?, "copies"?}               -> 200, 404
    DELETE /books/{id}                                                      -> 204, 404
    POST   /books/{id}/loans   {"member"}   in a transaction: one copy less -> 201, 404, 409 if no
           and a Loan document, or neither                                     copy is left
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, cast

from beanie import Document, Indexed, PydanticObjectId, init_beanie
from fastapi import FastAPI, HTTPException, Query, Response
from pydantic import BaseModel
from pymongo.errors import DuplicateKeyError

from asyncmongo import AsyncMongoClient

if TYPE_CHECKING:
    # Beanie's annotations name PyMongo's classes; asyncmongo's are drop-ins for them at run time,
    # which a type checker cannot know: the casts below say so (they do nothing at run time).
    from pymongo.asynchronous.client_session import AsyncClientSession as PyMongoSession
    from pymongo.asynchronous.database import AsyncDatabase as PyMongoDatabase


class Book(Document):
    isbn: Annotated[str, Indexed(unique=True)]
    title: str
    author: str
    year: int
    copies: int = 1

    class Settings:
        name = "books"


class Loan(Document):
    book_id: PydanticObjectId
    member: str
    at: datetime

    class Settings:
        name = "loans"


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


class OutOfCopies(Exception):
    pass


def _out(document: Document) -> dict[str, Any]:
    """A document as the service answers it (JSON types, ``_id``)."""
    return cast("dict[str, Any]", document.model_dump(mode="json", by_alias=True))


def make_app(uri: str, db_name: str) -> FastAPI:
    """The service, on its own client (opened and closed by the app's lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = AsyncMongoClient(uri)
        app.state.client = client
        await init_beanie(database=cast("PyMongoDatabase[Any]", client[db_name]),
                          document_models=[Book, Loan])
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(lifespan=lifespan)

    async def get_book(book_id: PydanticObjectId) -> Book:
        book = await Book.get(book_id)
        if book is None:
            raise HTTPException(404, "no such book")
        return book

    @app.post("/books", status_code=201)
    async def create_book(body: BookIn) -> dict[str, Any]:
        book = Book(**body.model_dump())
        try:
            await book.insert()
        except DuplicateKeyError:
            raise HTTPException(409, f"a book with isbn {body.isbn} exists") from None
        return _out(book)

    @app.get("/books")
    async def list_books(
        author: str | None = None, min_year: int | None = None,
        sort: str = Query("title", pattern="^-?(year|title)$"), limit: int = 50,
    ) -> list[dict[str, Any]]:
        query = Book.find()
        if author is not None:
            query = query.find(Book.author == author)
        if min_year is not None:
            query = query.find(Book.year >= min_year)
        field = sort.lstrip("-")
        order = -getattr(Book, field) if sort.startswith("-") else +getattr(Book, field)
        return [_out(b) for b in await query.sort(order).limit(limit).to_list()]

    @app.get("/books/{book_id}")
    async def read_book(book_id: PydanticObjectId) -> dict[str, Any]:
        return _out(await get_book(book_id))

    @app.patch("/books/{book_id}")
    async def update_book(book_id: PydanticObjectId, body: BookPatch) -> dict[str, Any]:
        book = await get_book(book_id)
        changes = body.model_dump(exclude_none=True)
        if changes:
            await book.set(changes)
        return _out(book)

    @app.delete("/books/{book_id}", status_code=204)
    async def delete_book(book_id: PydanticObjectId) -> Response:
        await (await get_book(book_id)).delete()
        return Response(status_code=204)

    @app.post("/books/{book_id}/loans", status_code=201)
    async def lend(book_id: PydanticObjectId, body: LoanIn) -> dict[str, Any]:
        await get_book(book_id)
        client: AsyncMongoClient = app.state.client
        try:
            async with client.start_session() as ours:
                session = cast("PyMongoSession", ours)
                async with await ours.start_transaction():
                    book = await Book.get(book_id, session=session)
                    if book is None or book.copies < 1:
                        raise OutOfCopies()
                    await book.set({Book.copies: book.copies - 1}, session=session)
                    loan = Loan(book_id=book_id, member=body.member,
                                at=datetime.now(timezone.utc))
                    await loan.insert(session=session)
        except OutOfCopies:
            raise HTTPException(409, "no copy left") from None
        return _out(loan)

    return app


app = make_app(os.environ.get("MONGODB_URI", "mongodb://localhost:27017"),
               os.environ.get("LIBRARY_DB", "library"))
